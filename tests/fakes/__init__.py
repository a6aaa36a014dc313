"""Test doubles that speak a real protocol (HTTP on 127.0.0.1), for tests and benchmarks."""
