"""Relays: read-only evaluation nodes with no database (``manage.py relay``).

A relay follows one environment's ruleset on an upstream control plane
(flags.relay.upstream), verifies client keys upstream once
(flags.relay.keys), answers the evaluation endpoints through the hot path
(flags.hotpath, fed by the relay's ruleset and keys) and the stream
(flags.stream), and forwards outcome events upstream from a durable outbox
(flags.relay.outbox). It is served by granian's embedded ASGI server in one
process (flags.relay.app). ``manage.py relay`` lives in canary, since it
also wires canary's outcome events in (canary.relay_events).
"""
