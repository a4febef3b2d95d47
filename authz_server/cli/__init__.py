"""The `authz-server` command line: parser, environment variables, one module per command
family.
"""
