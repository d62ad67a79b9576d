"""``/``: the operator's overview (canary.home)."""

from django.urls import path

from canary import home

urlpatterns = [path("", home.home, name="home")]
