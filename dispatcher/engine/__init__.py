"""The dispatcher process (process.Dispatcher) and its loops, one module each."""
