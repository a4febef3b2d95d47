"""Approval notifications: signed webhooks (JSON or Slack) for approval events.

notifier.py  `Notifier`: the event queue, the claim in the store, the expiry sweep
delivery.py  one endpoint's queue and sender task, retries with backoff
expiry.py    which pending records expired undecided
payload.py   the JSON body          slack.py   the Slack incoming-webhook body
redact.py    the body preview       signing.py the HMAC signature and its verification

This package imports nothing at package level: the approval condition imports `redact`
without pulling in the HTTP client.
"""
