package engine

// SetBackupFreeSpace replaces how a backup learns the free space beside
// the store (a file system cannot be filled on demand in a test), and
// returns the function that puts the real one back.
func SetBackupFreeSpace(f func(dir string) (uint64, error)) (restore func()) {
	old := backupFreeSpace
	backupFreeSpace = f
	return func() { backupFreeSpace = old }
}
