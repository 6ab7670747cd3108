"""URL patterns: their templates (``items/<int:item_id>``) become span names and labels."""

from __future__ import annotations

from django.urls import path

from shop import views

urlpatterns = [
    path("health", views.health),
    path("checkout", views.checkout),
    path("search", views.search),
    path("report", views.report),
    path("items/<int:item_id>", views.item),
]
