"""A module no test imports: importing it fails, so a result id naming it shows whether ids are ever imported."""

raise RuntimeError("tests.django_project.tripwire was imported")
