from tiergate.admin.cli import main

raise SystemExit(main())
