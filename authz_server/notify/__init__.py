"""Approval notifications: signed webhooks (JSON or Slack) for approval events.

notifier.py  `Notifier`: the event queue, the claim in the store, the expiry sweep
delivery.py  one endpoint's queue and sender task, retries with backoff
expiry.py    which pending records expired undecided
payload.py   the JSON body          slack.py   the Slack incoming-webhook body
signing.py   the HMAC signature and its verification

The body preview a notification shows is made by the approval condition when it creates
the pending record (`policy.conditions.preview`): the body is not stored. Notifications
depend on the policy layer, never the reverse.
"""
