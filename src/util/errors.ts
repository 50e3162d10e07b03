// Errors that mean "the command or its input is wrong", as opposed to a failure while running.
// The CLI exits with 2 for these (usage and configuration errors) and 1 for everything else.

/** A wrong argument, option or input file: the message says what and where; exit status 2. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}
