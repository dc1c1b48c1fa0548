"""URL map. Public paths are an interface (see DESIGN.md): keep them exactly."""

from django.contrib import admin
from django.urls import path

from storefront import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
