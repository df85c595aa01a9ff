"""Our re-authored modules, one generic module per model kind, reading only the architecture config; which kind
builds which is zoo/kinds/'s to say."""
