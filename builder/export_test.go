package builder

// UseOverlay turns the EROFS overlay view on or off for a test and returns
// a function that restores it.
func UseOverlay(on bool) (restore func()) {
	old := noOverlay
	noOverlay = !on
	return func() { noOverlay = old }
}

// UseDDIBuilder forces how disk images are built (DDIByRepart,
// DDIByVeritysetup; "" picks).
func UseDDIBuilder(m string) (restore func()) {
	old := ddiMethod
	ddiMethod = m
	return func() { ddiMethod = old }
}
