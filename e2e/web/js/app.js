// The page functions the legacy handlers call (handlers.js): they render what arrives
// into the DOM, where the end-to-end harness reads it back. Rendering uses textContent
// only, so pushed data is never interpreted as HTML.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function updateNotificationCount() {
  const badge = document.getElementById('notification-count');
  badge.textContent = String(Number(badge.textContent) + 1);
}

function toast(kind, title, content, extra) {
  const node = el('div', `toast ${kind}`);
  node.dataset.type = kind;
  Object.assign(node.dataset, extra || {});
  node.append(el('b', 'title', title), ' ', el('span', 'content', content));
  document.getElementById('toasts').append(node);
}

function showNotificationToast(notification) {
  toast('notification', notification.title, notification.content);
}

function addNotificationToList(notification) {
  document.getElementById('notification-list').append(el('li', '', notification.title));
}

function showAlertToast(alert) {
  toast('alert', alert.title, alert.content, { severity: alert.severity || '' });
}

function playAlertSound() {
  // Headless: no audio; the page counts how often it would have played.
  const sound = document.getElementById('alert-sound');
  sound.dataset.played = String(Number(sound.dataset.played || 0) + 1);
}

// The order this page shows in detail: ?order=<id> (numeric ids as numbers).
function getCurrentOrderId() {
  const id = new URLSearchParams(window.location.search).get('order');
  return id !== null && /^\d+$/.test(id) ? Number(id) : id;
}

function updateOrderStatus(status) {
  document.getElementById('order-status').textContent = status;
}

function updateOrderInList(order) {
  document.getElementById('order-list').append(el('li', '', `${order.order_no} ${order.status}`));
}

function showMaterialStock(material) {
  document.getElementById('materials').append(
    el('li', '', `${material.code} ${material.name} ${material.stock_quantity}`));
}
