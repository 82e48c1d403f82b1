"""`python -m mmtok`. A Ctrl-C while the entry module loads is still one line and exit 130."""

try:
    from mmtok.cli.entry import main
except KeyboardInterrupt:
    import os
    import sys

    sys.stderr.write("error: interrupted\n")
    os._exit(130)

main()
