package pgdump

// SharedSpillInUse is how many slots of the shared spill budget are taken.
func SharedSpillInUse() int {
	if ch := sharedSpill.Load(); ch != nil {
		return len(*ch)
	}
	return 0
}
