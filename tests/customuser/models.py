from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models


class ChatUserManager(BaseUserManager):
    def create_user(self, username: str, password: str | None = None) -> ChatUser:
        user = self.model(username=username)
        user.set_password(password)
        user.save(using=self._db)
        return user


class ChatUser(AbstractBaseUser):
    """A user model with no ``is_active`` field (nor permissions): every user
    is active, as Django's ``AbstractBaseUser.is_active = True`` says."""

    username = models.CharField(max_length=150, unique=True)

    USERNAME_FIELD = "username"
    objects = ChatUserManager()

    class Meta:
        app_label = "customuser"
