"""fastnet inside other tools: scikit-learn, Ray Tune and Dask, ONNX."""
