"""`python -m authz_server` is the same program as `authz-server`."""

from authz_server.cli.main import main

raise SystemExit(main())
