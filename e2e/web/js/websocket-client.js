// The legacy front end's WebSocket client, as documented in the legacy system's
// "WebSocket服务文档" (前端集成示例). Herald must work with it unchanged, so this file
// keeps that code as it was; the only edits are marked "herald-e2e:":
//   1. the host is the page's own (the original hard-codes the production host);
//   2. the code is wrapped in connectWebSocket() so that the documented reconnect
//      ("重新初始化WebSocket连接") can actually re-initialise it, and the ping timer
//      belongs to one socket.

// herald-e2e: wrapped so onclose can reconnect (see above).
function connectWebSocket() {
// 获取JWT令牌
const token = localStorage.getItem('token');

// 创建WebSocket连接
// herald-e2e: the page's host instead of the production one.
const socket = new WebSocket(`wss://${window.location.host}/ws/notifications/?token=${token}`);

// 连接打开时的处理
socket.onopen = (event) => {
  console.log('WebSocket连接已建立');
  
  // 订阅频道
  socket.send(JSON.stringify({
    type: 'subscribe',
    channels: ['notifications', 'alerts', 'orders']
  }));
};

// 接收消息的处理
socket.onmessage = (event) => {
  const message = JSON.parse(event.data);
  
  switch (message.type) {
    case 'notification':
      // 处理新通知
      handleNewNotification(message.data);
      break;
    case 'alert':
      // 处理系统告警
      handleSystemAlert(message.data);
      break;
    case 'order_update':
      // 处理订单更新
      handleOrderUpdate(message.data);
      break;
    case 'material_update':
      // 处理物料更新
      handleMaterialUpdate(message.data);
      break;
    case 'pong':
      // 处理pong响应
      console.log('收到pong响应:', message.timestamp);
      break;
    case 'subscription_success':
      // 处理订阅成功
      console.log('成功订阅频道:', message.channels);
      break;
    case 'error':
      // 处理错误
      console.error('WebSocket错误:', message.message);
      break;
    default:
      console.log('未知消息类型:', message);
  }
};

// 连接关闭时的处理
socket.onclose = (event) => {
  console.log('WebSocket连接已关闭:', event.code, event.reason);
  clearInterval(pingTimer); // herald-e2e: this socket's ping timer ends with it.
  
  // 可以在这里实现重连逻辑
  if (event.code !== 1000) {
    setTimeout(() => {
      // 重新连接
      console.log('尝试重新连接...');
      // 重新初始化WebSocket连接
      connectWebSocket(); // herald-e2e: the re-initialisation the comment asks for.
    }, 5000); // 5秒后重试
  }
};

// 发生错误时的处理
socket.onerror = (error) => {
  console.error('WebSocket错误:', error);
};

// 定期发送ping以保持连接活跃
const pingTimer = setInterval(() => { // herald-e2e: kept, to be cleared on close.
  if (socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: 'ping' }));
  }
}, 30000); // 每30秒发送一次
} // herald-e2e: end of connectWebSocket().

connectWebSocket();
