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
    # Video files (mmtok sample-frames; estimate-budget on videos)
    NOT_VIDEO = "not_video"
    NO_VIDEO_STREAM = "no_video_stream"
    UNSUPPORTED_CODEC = "unsupported_codec"
    TOO_SHORT = "too_short"
    # The executor's isolation (the row hung or killed the process that read it)
    TIMEOUT = "timeout"
    DECODER_CRASH = "decoder_crash"
    # Model rules
    MODEL_REFUSES = "model_refuses"
    # Filter rules (the message starts with the measured value, e.g. `width=12`)
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    BAD_ASPECT = "bad_aspect"
    FILE_TOO_SMALL = "file_too_small"
    FILE_TOO_LARGE = "file_too_large"
    FORMAT_NOT_ALLOWED = "format_not_allowed"
    TOO_FEW_TOKENS = "too_few_tokens"
    TOO_MANY_TOKENS = "too_many_tokens"
    NO_CAPTION = "no_caption"
    CAPTION_TOO_SHORT = "caption_too_short"
    CAPTION_TOO_LONG = "caption_too_long"
    WRONG_LANGUAGE = "wrong_language"
    MOJIBAKE = "mojibake"
    # Dedup
    DUPLICATE = "duplicate"
    # CLIP score (embed, filter)
    LOW_CLIP_SCORE = "low_clip_score"
    NO_CLIP_SCORE = "no_clip_score"
    # Detokenize
    BAD_TOKENS = "bad_tokens"


DESCRIPTIONS: dict[Reason, str] = {
    Reason.BAD_RECORD: "the input line or record could not be parsed (the message has the error)",
    Reason.NO_IMAGE: "the row has no image value (null, empty, or no image member in a tar sample)",
    Reason.UNSUPPORTED_URI: "the image is a URL; mmtok reads local files and bytes only",
    Reason.MISSING_FILE: "the image path does not exist",
    Reason.READ_ERROR: "the path exists but cannot be read (a directory, a FIFO, a socket or a "
    "device, no permission, I/O error)",
    Reason.EMPTY_FILE: "the image or video file or value has 0 bytes",
    Reason.NOT_IMAGE: "not a raster image format mmtok reads (HTML, SVG, random bytes, ...)",
    Reason.TRUNCATED: "the image data ends early (an interrupted download); a truncated video "
    "with no decodable frame (one with some gives those frames and a warning)",
    Reason.BOMB: "width x height exceeds the pixel limit (decompression bomb); no pixels allocated",
    Reason.UNSUPPORTED_MODE: "a pixel mode with no defined conversion to 8-bit RGB",
    Reason.DECODE_ERROR: "any other decoder error; the message has the decoder's words",
    Reason.NOT_VIDEO: "not a video container mmtok reads (random bytes, a still image, text)",
    Reason.NO_VIDEO_STREAM: "a media file without a video stream (audio only)",
    Reason.UNSUPPORTED_CODEC: "a video codec no installed decoder reads",
    Reason.TOO_SHORT: "the video has fewer frames (or less time) than the sampling mode needs, "
    "and the mode cannot repeat frames (Qwen's even count; a timestamp past the end)",
    Reason.TIMEOUT: "the row took longer than --row-timeout (sample-frames: --timeout) seconds "
    "(a hung decoder); its worker was killed and the run went on",
    Reason.DECODER_CRASH: "the row killed the process that read it, twice (a decoder crash or "
    "the out-of-memory killer); the message has the signal or exit code",
    Reason.MODEL_REFUSES: "the model's processor refuses this size (Qwen: aspect ratio over 200)",
    Reason.TOO_SMALL: "shorter side below --min-side, or fewer pixels than --min-pixels",
    Reason.TOO_LARGE: "longer side above --max-side, or more pixels than --max-pixels",
    Reason.BAD_ASPECT: "long side / short side above --max-aspect (strips, banners)",
    Reason.FILE_TOO_SMALL: "file smaller than --min-bytes",
    Reason.FILE_TOO_LARGE: "file larger than --max-bytes",
    Reason.FORMAT_NOT_ALLOWED: "image format not in --formats",
    Reason.TOO_FEW_TOKENS: "fewer vision tokens than --min-tokens under --preset",
    Reason.TOO_MANY_TOKENS: "more vision tokens than --max-tokens under --preset",
    Reason.NO_CAPTION: "the caption is null, empty or only whitespace",
    Reason.CAPTION_TOO_SHORT: "fewer words than --caption-min-words or characters than "
    "--caption-min-chars",
    Reason.CAPTION_TOO_LONG: "more words than --caption-max-words",
    Reason.WRONG_LANGUAGE: "the caption is confidently in a language not in --lang",
    Reason.MOJIBAKE: "the caption was decoded with the wrong codec or has U+FFFD characters",
    Reason.DUPLICATE: "a duplicate of the kept row named in the message (mmtok dedup)",
    Reason.LOW_CLIP_SCORE: "image-caption cosine below --min-clip-score (embed, filter)",
    Reason.NO_CLIP_SCORE: "filter --min-clip-score without --model: the row has a caption but "
    "a null clip_score (an input not scored, or scored without this row's caption)",
    Reason.BAD_TOKENS: "the row's VQ ids do not fit the tokenizer: missing, a grid other than "
    "the tokenizer's, or an id outside its codebook (mmtok detokenize)",
}


class RowRejected(Exception):
    """Raised inside a row-wise stage for one bad row; the stage turns it into a reject."""

    def __init__(self, reason: Reason | str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = str(reason)
        self.message = message
