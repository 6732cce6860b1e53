"""Local or large model: the router's signals and calibration, the remote (teacher) client, and the
request embedder behind the distance signal."""
