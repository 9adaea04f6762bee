package engine

// SetCrashHooks sets functions run after a batch's first transaction and
// after its signatures, before the second transaction.
func SetCrashHooks(reserved, signed func()) { testHookReserved, testHookSigned = reserved, signed }
