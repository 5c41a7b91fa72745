"""Load tests and benchmarks: locust users and `kidsart bench`. Talks to serve/ over HTTP."""
