from ringfl.cli import main

raise SystemExit(main())
