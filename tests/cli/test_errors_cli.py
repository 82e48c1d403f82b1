"""Every user error is one line on stderr and exit 2 (130 for Ctrl-C), never a traceback.

The faults are real: a read-only file system (a read-only tmpfs mount when the tests run as
root, who ignores permission bits; a chmod 555 folder otherwise), a full one (a 256 kB tmpfs,
and /dev/full, which fails every write with ENOSPC), a file where a folder must be, a thread
that cannot start under a memory limit, SIGINT at several instants of start-up, and optional
packages that fail to import.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from conftest import write_jsonl
from typer.core import TyperOption
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.cli.output import user_error
from mmtok.errors import MmtokError

runner = CliRunner()
MMTOK = [sys.executable, "-m", "mmtok"]


def mmtok(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*MMTOK, *args], capture_output=True, text=True, timeout=120, **kwargs)


def assert_one_line(result, code: int, *words: str) -> str:
    """The run ended with `code` and said so in one line of stderr holding `words`."""
    err = result.stderr
    assert "Traceback" not in err + result.stdout, err
    assert result.returncode == code, (result.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def pairs(tmp_path, image_files) -> Path:
    names = ["rgb_640x480.png", "baseline_640x480.jpg", "photo_100x50.webp", "tiny_1x1.png"]
    rows = [{"image": str(image_files[n]), "caption": f"photo {n}"} for n in names]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)])
    if done.returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs")


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody can write in: a read-only mount for root, chmod 555 for others."""
    folder = tmp_path / "read_only"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    _mount_tmpfs(folder, "ro,size=64k")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    """A file system of 256 kB: a real ENOSPC once the shards outgrow it."""
    folder = tmp_path / "full"
    _mount_tmpfs(folder, "size=256k")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


# ---- OS errors on a user's path ---------------------------------------------------------


def test_read_only_output_folder(pairs, read_only):
    result = mmtok("probe", str(pairs), "-o", str(read_only / "out"), "-w", "1")
    line = assert_one_line(result, 2, str(read_only))
    assert "hint:" in line


def test_rejects_on_a_read_only_path(pairs, read_only):
    result = mmtok("probe", str(pairs), "-o", "-", "--rejects", str(read_only / "rejects.jsonl"))
    assert_one_line(result, 2, str(read_only / "rejects.jsonl"))


def test_output_under_a_file(pairs, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = mmtok("probe", str(pairs), "-o", str(tmp_path / "a_file" / "out"), "-w", "1")
    assert_one_line(result, 2, "a_file: a file, where a folder is needed")
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_plot_into_a_missing_folder_fails_before_the_run(pairs, tmp_path):
    out = tmp_path / "budget"
    plot = tmp_path / "no_such_folder" / "budget.png"
    result = mmtok("estimate-budget", str(pairs), "-p", "qwen2-vl", "--plot", str(plot), "-o", out)
    assert_one_line(result, 2, "--plot", "no_such_folder", "does not exist")
    assert not out.exists()  # checked before any work


@pytest.mark.parametrize("command", ["estimate-budget", "dedup"])
def test_a_side_file_inside_the_output_folder_fails_before_the_run(pairs, tmp_path, command):
    """The output folder is published whole with a manifest of what it holds: a plot or a
    clusters file of the user's cannot go inside it."""
    out = tmp_path / "out"
    flag, name = ("--plot", "p.png") if command == "estimate-budget" else ("--clusters", "c.pq")
    extra = ["-p", "qwen2-vl"] if command == "estimate-budget" else []
    result = mmtok(command, str(pairs), *extra, flag, str(out / name), "-o", out)
    assert_one_line(result, 2, flag, "inside the output folder")
    assert not out.exists()


def test_clusters_into_a_missing_folder_fails_before_the_run(pairs, tmp_path):
    clusters = tmp_path / "no_such_folder" / "clusters.parquet"
    result = mmtok("dedup", str(pairs), "-o", "-", "--clusters", str(clusters))
    assert_one_line(result, 2, "--clusters", "no_such_folder", "does not exist")
    assert result.stdout == ""  # no row written


def test_plot_into_the_folder_that_output_creates(pairs, tmp_path):
    out, plot = tmp_path / "new" / "budget", tmp_path / "new" / "budget.png"
    result = mmtok("estimate-budget", str(pairs), "-p", "qwen2-vl", "--plot", str(plot), "-o", out)
    assert result.returncode == 0, result.stderr
    assert plot.stat().st_size > 0 and out.is_dir()


def test_disk_full_while_writing_shards(pairs, full_disk, tmp_path):
    many = tmp_path / "many.jsonl"
    many.write_text(pairs.read_text() * 6)  # raw tiles of 24 rows: about 10 MB
    out = full_disk / "tiles"
    result = mmtok(
        "tile", str(many), "-p", "qwen2-vl", "--emit", "tiles", "--tile-format", "raw",
        "-o", str(out), "-w", "1",
    )  # fmt: skip
    assert_one_line(result, 2, "No space left on device", str(out), "--resume")


def test_disk_full_between_shards_then_resume(pairs, full_disk, tmp_path):
    """Small shards: the disk fills mid-run, the clean-up fails on the closed file too, and
    the one line still says what happened; with space again, --resume finishes the run."""
    many = tmp_path / "many.jsonl"
    many.write_text(pairs.read_text() * 6)
    out = full_disk / "tiles"
    args = ["tile", str(many), "-p", "qwen2-vl", "--emit", "tiles", "--tile-format", "raw"]
    args += ["-o", str(out), "-w", "1", "--shard-rows", "4"]
    assert_one_line(mmtok(*args), 2, "No space left on device", "--resume")
    subprocess.run(["mount", "-o", "remount,size=64m", str(full_disk)], check=True)
    result = mmtok(*args, "--resume", "--json")
    assert result.returncode == 0, result.stderr


def test_disk_full_on_rejects_without_a_file_name():
    # /dev/full: every write fails with ENOSPC, and the error carries no file name
    result = mmtok("probe", "-", "-o", "-", "--rejects", "/dev/full", input='{"image": "x.png"}\n')
    assert_one_line(result, 2, "/dev/full", "No space left on device")


def test_a_thread_that_cannot_start_is_one_line(pairs, tmp_path):
    """Under an address-space limit, each thread reserves its stack (RLIMIT_STACK) and pyarrow
    fails to start its pool: `ArrowException: Failed to launch worker thread`."""

    def limits():  # (reading the rejects back starts pyarrow's pool)
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000 << 10, 1_500_000 << 10))
        resource.setrlimit(resource.RLIMIT_STACK, (200_000 << 10, 200_000 << 10))

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"image": f"gone_{i}.jpg"} for i in range(5)])
    result = mmtok("probe", str(rows), "-o", str(tmp_path / "out"), "-w", "1", preexec_fn=limits)
    if result.returncode == 0:
        pytest.skip("these limits let every thread start on this machine")
    assert_one_line(result, 2, "thread", "ulimit")


@pytest.fixture
def long_run(tmp_path, image_files) -> Path:
    """Rows that take many seconds to decode, so the signal lands in start-up or in the run."""
    row = {"image": str(image_files["baseline_640x480.jpg"]), "caption": "a photo"}
    return write_jsonl(tmp_path / "long.jsonl", [row] * 3000)


def started_after_exec(process: subprocess.Popen) -> None:
    """Wait until the child runs Python: a SIGINT between fork and exec lands in the forked
    copy of the test process (a large one forks slowly under load) and is lost at exec."""
    args = [os.fsencode(a) for a in process.args]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[:-1] == args:
                return
        except OSError:
            return  # no /proc, or it has already ended
        time.sleep(0.005)


@pytest.mark.parametrize("delay", [0.3, 0.5, 0.65, 0.8, 0.95, 1.2])
def test_ctrl_c_at_any_instant_of_start_up(long_run, tmp_path, delay):
    process = subprocess.Popen(
        [*MMTOK, "probe", str(long_run), "-o", str(tmp_path / "out"), "-w", "1", "--decode-check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started_after_exec(process)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_line(result, 130, "interrupted")


def test_os_errors_without_a_path_and_other_exceptions_are_bugs():
    assert user_error(ValueError("a bug")) is None
    assert user_error(OSError(errno.EINVAL, "Invalid argument")) is None
    assert user_error(KeyError("column")) is None
    named = user_error(PermissionError(errno.EACCES, "Permission denied", "/data/out"))
    assert named is not None and named.exit_code == 2 and "/data/out" in str(named)
    full = user_error(OSError(errno.ENOSPC, "No space left on device"), ("/big/out", None))
    assert full is not None and "/big/out" in str(full) and "--resume" in full.hint
    assert user_error(KeyboardInterrupt()).exit_code == 130
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise ValueError("Operation on closed file") from None
    except ValueError as cleanup:
        assert "No space left" in str(user_error(cleanup, ("/big/out",)))
    assert user_error(RuntimeError("can't start new thread")).exit_code == 2
    assert user_error(ValueError("can't start new thread")) is None  # only where threads start
    concurrent = MmtokError("out is being written by another run (pid 12)")
    assert user_error(concurrent) is concurrent  # the losing side of two writers: one line


def test_bug_keeps_its_traceback(pairs, tmp_path):
    """An exception that is not a user error is not dressed up as one."""
    code = (
        "import sys; import mmtok.cli.probe as p\n"
        "def boom(*a, **k): raise ValueError('a bug')\n"
        "p.o.run_dataset = boom\n"
        "from mmtok.cli.entry import main; sys.argv = ['mmtok', 'probe', sys.argv[1]]; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(pairs)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "ValueError: a bug" in result.stderr


# ---- flags -----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["eng", "xx", "en,english"])
def test_unknown_language_code_lists_the_known_ones(pairs, lang):
    result = runner.invoke(app, ["filter", str(pairs), "--dry-run", "--lang", lang])
    assert result.exit_code == 2, result.output
    assert "unknown language code" in result.stderr and " en " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_known_languages_are_py3langids():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from mmtok.filters import LANGUAGES

    model = LanguageIdentifier.from_model_file(MODEL_FILE)
    assert set(model.nb_classes) == LANGUAGES


def test_bad_flag_is_one_line(pairs):
    assert_one_line(mmtok("probe", str(pairs), "--frob"), 2, "--frob", "--help")
    assert_one_line(mmtok("probe", str(pairs), "-w", "0"), 2, "--workers")


def _missing(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """mmtok with `module` failing to import, as when it is not installed."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from mmtok.cli.entry import main; sys.argv = ['mmtok', *sys.argv[1:]]; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_plot_without_matplotlib_says_what_to_install_before_any_work(pairs, tmp_path):
    out = tmp_path / "out"
    args = ["estimate-budget", str(pairs), "-p", "qwen2-vl", "--plot", "b.png", "-o", str(out)]
    result = _missing("matplotlib", *args, cwd=tmp_path)
    assert_one_line(result, 2, "--plot", "pip install 'mmtok[plot]'")
    assert not out.exists()


def test_tokenizer_without_tokenizers_says_what_to_install_before_any_work(pairs, tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    out = tmp_path / "out"
    args = ["estimate-budget", str(pairs), "-p", "qwen2-vl", "--tokenizer", "tokenizer.json"]
    result = _missing("tokenizers", *args, "-o", str(out), cwd=tmp_path)
    assert_one_line(result, 2, "tokenizers", "pip install 'mmtok[text]'")
    assert not out.exists()


# Numeric options where 0 is a meaningful value (negative values are still refused).
ZERO_IS_VALID = {
    ("estimate-budget", "seed"): "any seed, 0 included",
    ("dedup", "max_distance"): "0 bits: identical perceptual hashes only",
    ("filter", "lang_confidence"): "a probability: 0 drops every caption of another language",
}
REQUIRED = {cmd: ["-p", "qwen2-vl"] for cmd in ("tile", "estimate-budget", "filter")}


def _numeric_options():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            kind = getattr(param.type_descriptor, "annotation", None)
            if isinstance(param, TyperOption) and kind in (int, float):
                yield name, param.name, param.opts[0]


@pytest.mark.parametrize(("command", "name", "flag"), list(_numeric_options()))
def test_every_numeric_option_refuses_negative_and_zero(pairs, tmp_path, command, name, flag):
    values = ["-5"] if (command, name) in ZERO_IS_VALID else ["-5", "0"]
    for value in values:
        args = [command, str(pairs), *REQUIRED.get(command, []), flag, value]
        result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["probe", "filter", "tile", "estimate-budget", "dedup"])
def test_zero_shard_bytes_is_refused(pairs, tmp_path, command):
    args = [command, str(pairs), *REQUIRED.get(command, []), "--shard-bytes", "0"]
    if command == "filter":
        args += ["--min-side", "2"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "at least 1 byte" in result.stderr


def test_recipe_values_are_checked_like_flags(pairs, tmp_path):
    recipe = tmp_path / "rules.toml"
    recipe.write_text("min-side = -5\n")
    result = runner.invoke(app, ["filter", str(pairs), "--dry-run", "--recipe", str(recipe)])
    assert result.exit_code == 2 and "--min-side must be a number above 0" in result.stderr


def test_paths_with_brackets_are_printed_as_written(pairs, tmp_path):
    """A path is not markup: rich would drop `[raw]` from `data/[raw]`."""
    out = tmp_path / "[raw]"
    wide = {"COLUMNS": "400"}  # the tmp path whole on one line
    result = runner.invoke(app, ["probe", str(pairs), "-o", str(out), "-w", "1"], env=wide)
    assert result.exit_code == 0 and "[raw]" in result.stdout
    result = runner.invoke(
        app, ["filter", str(pairs), "-o", str(tmp_path / "[kept]"), "--min-side", "2"], env=wide
    )
    assert result.exit_code == 0 and "[kept]" in result.stdout
