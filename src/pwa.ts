import { Workbox } from 'workbox-window';

/**
 * Registers the precaching service worker. A new version waits until the person chooses to
 * reload (it is never swapped under a running training); `onUpdate` shows that choice.
 */
export function registerServiceWorker(onUpdate: (reload: () => void) => void): void {
  if (!('serviceWorker' in navigator) || import.meta.env.DEV) return;
  const wb = new Workbox(`${import.meta.env.BASE_URL}sw.js`);
  wb.addEventListener('waiting', () => {
    onUpdate(() => {
      wb.addEventListener('controlling', () => window.location.reload());
      wb.messageSkipWaiting();
    });
  });
  void wb.register();
}
