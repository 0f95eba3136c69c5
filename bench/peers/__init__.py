"""Peers the gateway is measured against, each run as its own uvicorn process."""
