"""The simulated payment processor, as a service of its own (`python -m processor`).

An aiohttp server with its own SQLite file: it shares no table, no code and no process with
Paydesk, which reaches it over HTTP through payments.gateways.http. See docs/processor.md.
"""
