from colearn_learner.cli import main

raise SystemExit(main())
