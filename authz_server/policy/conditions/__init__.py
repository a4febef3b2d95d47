"""Per-action conditions (`when`) and `mcp_tools`: one module per kind.

kinds.py     the table: one row per `when` key (compiler, evaluation order, stateful,
             effects that may use it, what it reads) and the reason precedence
base.py      the framework: ConditionResult (holds / fails / unknown), RequestContext
when.py      a rule's `when:` compiled into one When, and how its conditions run
jsonbody.py  the body as one strict JSON document, or why it is unavailable
query.py     the query string, decoded the way backends decode it
schedule.py  `schedule`       matchers.py  `headers`, `query`
body.py      `body`           cel.py       `expr`
rate_limit.py `rate_limit`    approval.py  `approval`
preview.py   what an approval's notification may show of the body
mcp.py       `mcp_tools` (a rule key, not a `when` condition)
"""
