"""One thin module per command: parse its options, call the core, hand the result to the
console, return an ExitCode. Heavy modules are imported inside the commands' bodies so that
`shimctl --help` stays fast."""
