"""`python -m zoo.web DIR [--port N]`: serve a web bundle on 127.0.0.1 and print its URL (Ctrl-C stops)."""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.errors import Arguments, InputError
from zoo.quiet import guarded
from zoo.web.serve import server, url, validate_bundle


def main(argv: list[str]) -> int:
    parser = Arguments(prog="python -m zoo.web", description=__doc__.split(": ", 1)[1])
    parser.add_argument("bundle", type=Path, help="the web/ folder next to an exported flatbuffer")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    manifest = validate_bundle(args.bundle)
    try:
        httpd = server(args.bundle, args.port)
    except OSError as err:
        raise InputError(f"127.0.0.1:{args.port}: {err.strerror}: choose another port with --port") from None
    print(f"{manifest['model']} ({manifest['quant']}, {manifest['size_bytes'] / 1e6:.1f} MB): {url(httpd)}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(guarded("zoo.web", lambda: main(sys.argv[1:]), sys.argv[1:]))
