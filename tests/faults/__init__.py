"""Fault-injection tests: real processes on loopback (redis-server, an HTTP reranker test server,
the gateway under uvicorn) with a TCP fault proxy between the gateway and its dependencies."""
