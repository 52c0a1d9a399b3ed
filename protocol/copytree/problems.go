package copytree

// Both ends of a copy tell their caller as they go: each thing not copied
// to Problem, counted in Problems unless it was skipped by design, and the
// totals so far to Progress after each entry and each chunk.

// tellProblem counts a problem that is no skip in *problems and tells it
// to problem, if set.
func tellProblem(problem func(path []byte, message string, skipped bool), problems *int, where []byte, msg string, skipped bool) {
	if !skipped {
		*problems++
	}
	if problem != nil {
		problem(where, msg, skipped)
	}
}

// tellProgress tells progress, if set, the totals so far.
func tellProgress(progress func(files int, bytes int64), files int, bytes int64) {
	if progress != nil {
		progress(files, bytes)
	}
}
