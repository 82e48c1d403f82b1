"""Machine-readable reason codes for rejected rows, with the sentence the docs show for each."""

from enum import StrEnum


class Reason(StrEnum):
    # Reading the row
    BAD_RECORD = "bad_record"
    NO_IMAGE = "no_image"
    UNSUPPORTED_URI = "unsupported_uri"
    # Reading the file
    MISSING_FILE = "missing_file"
    READ_ERROR = "read_error"
    EMPTY_FILE = "empty_file"
    # Decoding the image
    NOT_IMAGE = "not_image"
    TRUNCATED = "truncated"
    BOMB = "bomb"
    UNSUPPORTED_MODE = "unsupported_mode"
    DECODE_ERROR = "decode_error"
    # Model rules
    MODEL_REFUSES = "model_refuses"


DESCRIPTIONS: dict[Reason, str] = {
    Reason.BAD_RECORD: "the input line or record could not be parsed (the message has the error)",
    Reason.NO_IMAGE: "the row has no image value (null, empty, or no image member in a tar sample)",
    Reason.UNSUPPORTED_URI: "the image is a URL; mmtok reads local files and bytes only",
    Reason.MISSING_FILE: "the image path does not exist",
    Reason.READ_ERROR: "the path exists but cannot be read (a directory, no permission, I/O error)",
    Reason.EMPTY_FILE: "the image file or value has 0 bytes",
    Reason.NOT_IMAGE: "not a raster image format mmtok reads (HTML, SVG, random bytes, ...)",
    Reason.TRUNCATED: "the image data ends early (an interrupted download)",
    Reason.BOMB: "width x height exceeds the pixel limit (decompression bomb); no pixels allocated",
    Reason.UNSUPPORTED_MODE: "a pixel mode with no defined conversion to 8-bit RGB",
    Reason.DECODE_ERROR: "any other decoder error; the message has the decoder's words",
    Reason.MODEL_REFUSES: "the model's processor refuses this size (Qwen: aspect ratio over 200)",
}


class RowRejected(Exception):
    """Raised inside a row-wise stage for one bad row; the stage turns it into a reject."""

    def __init__(self, reason: Reason | str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = str(reason)
        self.message = message
