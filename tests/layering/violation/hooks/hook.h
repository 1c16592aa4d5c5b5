// Fixture: the target of a forbidden include.
