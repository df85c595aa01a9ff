"""zoo on the web: the `web` bundle (bundle.py), its page (page/, LiteRT.js from the npm packages of
package.json) and the local server (serve.py, `python -m zoo.web DIR`)."""
