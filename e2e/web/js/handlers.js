// The legacy front end's message handlers, as documented in "WebSocket服务文档"
// (处理消息示例), unchanged. handleMaterialUpdate is referenced there but not shown;
// it is written in the same style below.

// 处理新通知
function handleNewNotification(notification) {
  // 更新通知计数
  updateNotificationCount();
  
  // 显示通知提醒
  showNotificationToast(notification);
  
  // 如果用户当前在通知页面，更新通知列表
  if (window.location.pathname === '/notifications') {
    addNotificationToList(notification);
  }
}

// 处理系统告警
function handleSystemAlert(alert) {
  // 显示告警提醒
  showAlertToast(alert);
  
  // 如果是高严重性告警，可能需要特殊处理
  if (alert.severity === 'critical') {
    playAlertSound();
  }
}

// 处理订单更新
function handleOrderUpdate(order) {
  // 如果用户当前在订单详情页面，更新订单状态
  const currentOrderId = getCurrentOrderId();
  if (currentOrderId === order.id) {
    updateOrderStatus(order.status);
  }
  
  // 如果用户当前在订单列表页面，更新列表项
  if (window.location.pathname === '/orders') {
    updateOrderInList(order);
  }
}

// 处理物料更新 (not shown in the document; same style as the others)
function handleMaterialUpdate(material) {
  showMaterialStock(material);
}
