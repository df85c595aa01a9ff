"""`python -m zoo.web DIR [--port N]`: serve a web bundle on 127.0.0.1 and print its URL (Ctrl-C stops)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.web.serve import BundleNotServable, check_bundle, server, url


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.web", description=__doc__.split(": ", 1)[1])
    parser.add_argument("bundle", type=Path, help="the web/ folder next to an exported flatbuffer")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    try:
        manifest = check_bundle(args.bundle)
        httpd = server(args.bundle, args.port)
    except (BundleNotServable, OSError) as err:
        print(f"zoo.web: error: {err}", file=sys.stderr)
        return 1
    print(f"{manifest['model']} ({manifest['quant']}, {manifest['size_bytes'] / 1e6:.1f} MB): {url(httpd)}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
