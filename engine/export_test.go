package engine

// SetCrashHooks sets functions run after a batch's first transaction and
// after its signatures, before the second transaction.
func SetCrashHooks(reserved, signed func()) { testHookReserved, testHookSigned = reserved, signed }

// SetCommitHooks sets a function that may refuse a batch's reservation
// (given its request ids) and one told how many batches each committed
// transaction carried.
func SetCommitHooks(reserving func(ids []string) error, committed func(batches int)) {
	testHookReserving, testHookCommitted = reserving, committed
}

// StoreProbeInterval is how often the watcher probes a failing database.
const StoreProbeInterval = storeProbeInterval
