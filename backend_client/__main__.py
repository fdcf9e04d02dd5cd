from backend_client.cli import main

raise SystemExit(main())
