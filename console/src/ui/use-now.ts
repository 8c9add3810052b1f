import { useEffect, useState } from "preact/hooks";

/** This browser's clock, Unix ms, read again every `intervalMs`: for countdowns and "3 s ago". */
export function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}
