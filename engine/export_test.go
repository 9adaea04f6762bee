package engine

// SetCrashHooks sets functions run after a batch's first transaction and
// after its signatures, before the second transaction.
func SetCrashHooks(reserved, signed func()) { testHookReserved, testHookSigned = reserved, signed }

// StoreProbeInterval is how often the watcher probes a failing database.
const StoreProbeInterval = storeProbeInterval
