from __future__ import annotations

from django.contrib import admin
from django.urls import path
from signups import views

from dataqueue.contrib.django import dashboard_urls

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    # The dataqueue dashboard for staff users (before admin.site.urls, which would
    # otherwise claim admin/dataqueue/).
    *dashboard_urls(prefix="admin/dataqueue/"),
    path("admin/", admin.site.urls),
]
