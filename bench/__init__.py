"""Benchmarks. A package so that RQ workers can import `bench.pipelines` by dotted path."""
