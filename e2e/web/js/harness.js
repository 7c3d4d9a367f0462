// Test instrumentation, loaded before the legacy client and kept out of it:
//  - the token comes from the page URL (?token=...) into localStorage, where the legacy
//    login put it and where the legacy client reads it;
//  - every WebSocket the page opens is recorded: window.heraldSockets (the sockets),
//    window.heraldReceived (every JSON message received, in order) and
//    window.heraldEvents ('open' / 'close <code>' / 'error'), read by the harness over CDP;
//  - the legacy page's connection indicator (🟢 已连接 / 🔴 已断开) follows the same events.
(() => {
  const token = new URLSearchParams(window.location.search).get('token');
  if (token !== null) localStorage.setItem('token', token);

  window.heraldSockets = [];
  window.heraldReceived = [];
  window.heraldEvents = [];
  const status = (text) => {
    const node = document.getElementById('connection-status');
    if (node) node.textContent = text;
  };

  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class RecordingWebSocket extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      window.heraldSockets.push(this);
      this.addEventListener('open', () => {
        window.heraldEvents.push('open');
        status('🟢 已连接');
      });
      this.addEventListener('message', (event) => {
        try {
          window.heraldReceived.push(JSON.parse(event.data));
        } catch (e) {
          window.heraldReceived.push({ unparsed: String(event.data) });
        }
      });
      this.addEventListener('close', (event) => {
        window.heraldEvents.push(`close ${event.code}`);
        status('🔴 已断开');
      });
      this.addEventListener('error', () => window.heraldEvents.push('error'));
    }
  };
})();
