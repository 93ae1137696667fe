package builder

// UseOverlay turns the EROFS overlay view on or off for a test and returns
// a function that restores it.
func UseOverlay(on bool) (restore func()) {
	old := noOverlay
	noOverlay = !on
	return func() { noOverlay = old }
}
