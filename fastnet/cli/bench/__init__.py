"""The benchmark commands (``fastnet bench``): fastnet against its peers, interleaved."""
