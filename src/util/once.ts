// Work a process does at most once (a download, a build into the cache): the first call starts
// it, every later call shares its promise; a failure is forgotten so that a later call retries.
// The arguments of later calls are ignored: callers pass the same setup.

export function sharedOnce<A extends unknown[], T>(make: (...args: A) => Promise<T>): (...args: A) => Promise<T> {
  let pending: Promise<T> | undefined;
  return (...args: A): Promise<T> => {
    pending ??= make(...args).catch((e: unknown) => {
      pending = undefined;
      throw e;
    });
    return pending;
  };
}
