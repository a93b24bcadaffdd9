package pgdump

// SharedSpillInUse is how many slots of the shared spill budget are taken.
func SharedSpillInUse() int { return len(sharedSpillTokens) }
