from django.urls import path

from tests.django_project import views

urlpatterns = [path("signup", views.signup)]
