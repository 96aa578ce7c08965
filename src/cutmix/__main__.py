from cutmix.cli import main

raise SystemExit(main())
