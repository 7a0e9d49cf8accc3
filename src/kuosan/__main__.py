from kuosan.cli import main

raise SystemExit(main())
