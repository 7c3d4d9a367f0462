"""HTTP routes: only the publish endpoint the backend's views and tasks stand in for."""

from django.urls import path

from notifications import views

urlpatterns = [
    path("api/push/", views.push),
]
