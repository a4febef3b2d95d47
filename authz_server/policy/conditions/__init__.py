"""Per-action conditions (`when`, SPEC §6) and `mcp_tools`: one module per kind.

base.py      the framework: ConditionResult (holds / fails / unknown), RequestContext,
             When (a rule's compiled conditions), reason precedence
jsonbody.py  the body as one strict JSON document, or why it is unavailable
query.py     the query string, decoded the way backends decode it
schedule.py  `schedule`       matchers.py  `headers`, `query`
body.py      `body`           cel.py       `expr`
mcp.py       `mcp_tools`      when.py      the `when:` schema → When
"""
